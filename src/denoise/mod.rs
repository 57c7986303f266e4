//! BLIP captioning, description cleaning (CapFilt-style), MiniLM text and BLIP image features.
