//! Kabinet's GraphQL server: schema, authentication, HTTP, and the `kabinet` command.

pub mod auth;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod files;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod scheduler;
pub mod schema;
pub mod seed;
pub mod startup;

pub use startup::Application;
