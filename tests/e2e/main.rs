//! Every Lifeboat test in one binary (the AWS SDKs are linked once): end-to-end restores over
//! real nats-server and moto_server, resilience, bad input, and the logic behind them.

mod aggregator;
mod api;
mod backup_tags;
mod catalog;
mod chaos;
mod clumio;
mod deploy;
mod dr;
mod dynamodb;
mod dynec2_scale;
mod ebs_scale;
mod ec2;
mod everything;
mod fuzz;
mod guard;
mod invalid;
mod logic;
mod mocks;
mod nats_settings;
mod observability;
mod operator;
mod plans;
mod quota;
mod rds;
mod rds_scale;
mod redrive;
mod replan;
mod resilience;
mod restore;
mod sqs;
mod stack;
mod stall;
mod throttle;
mod traces;
mod verdict;
