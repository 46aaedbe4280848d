//! intake: multi-channel message ingestion. See the README for the architecture.

pub mod amqp;
pub mod attachments;
pub mod bench;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod health;
pub mod http;
pub mod inbound_parse;
pub mod metrics;
pub mod ops;
pub mod read;
pub mod smtp;
pub mod smtpd;
pub mod store;
pub mod update;

pub use intake_adapters as adapters;
