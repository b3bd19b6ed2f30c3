//! Pieces shared by pages.

pub mod desired_editor;
