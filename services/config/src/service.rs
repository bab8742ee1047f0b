//! The config service on `lifeboat.work.config`. (Contract stub: the integration helper fills it in.)
