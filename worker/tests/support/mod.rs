//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

pub mod docker;
pub mod images;
pub mod client;
pub mod http;
pub mod worker;
