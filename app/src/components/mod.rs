//! Pieces shared by pages.

pub mod count_chart;
pub mod device_actions;
pub mod device_summary;
pub mod drift_table;
pub mod fleet_activity;
pub mod fleet_table;
pub mod group_chart;
pub mod history;
pub mod module_list;
pub mod query_box;
pub mod refresh;
pub mod section_editor;
pub mod tab_list;
pub mod telemetry_chart;
