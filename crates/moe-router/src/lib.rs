//! moe-router
