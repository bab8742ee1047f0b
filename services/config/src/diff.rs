//! Field-by-field differences between two configurations. (Contract stub: the core helper fills it in.)
