//! When a continuous-backup check syncs a bucket. (helper h1)
