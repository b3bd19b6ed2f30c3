//! Pieces shared by pages.

pub mod desired_editor;
pub mod drift_table;
pub mod fleet_table;
pub mod group_chart;
pub mod query_box;
pub mod telemetry_chart;
