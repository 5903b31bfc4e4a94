//! tapir-curriculum
