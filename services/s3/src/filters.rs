//! Object filters of a restore from a protection group (Clumio's `search_object_filters`). (helper h2)
