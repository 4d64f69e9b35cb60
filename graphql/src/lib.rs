//! Kabinet's GraphQL server: schema, authentication, HTTP, and the `kabinet` command.

pub mod auth;
pub mod browser;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod files;
pub mod http;
pub mod identity_http;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod scheduler;
pub mod schema;
pub mod seed;
pub mod startup;
pub mod transport;
pub mod ws;

pub use startup::Application;
