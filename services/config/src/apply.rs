//! Restores documents into a target. (Contract stub: the integration helper fills it in.)
