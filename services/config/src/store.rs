//! Where exports live in S3. (Contract stub: the core helper fills it in.)
