//! kshot-eval
