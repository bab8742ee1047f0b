//! The Lifeboat bus over Amazon SQS.
