//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

pub mod client;
pub mod docker;
pub mod http;
pub mod images;
pub mod worker;
