//! lora-zoo
