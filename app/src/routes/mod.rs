//! One module per page.

pub mod bench;
pub mod configurations;
pub mod device;
pub mod endpoints;
pub mod fleet;
pub mod jobs;
pub mod overview;
pub mod signin;
pub mod virtual_device;
