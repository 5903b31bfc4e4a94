//! Models: Llama/Qwen2 decoder and BERT encoder (in progress)
