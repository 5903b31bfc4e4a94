//! data-select
