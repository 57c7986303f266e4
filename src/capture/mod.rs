//! Camera sources (folder, serial VC0706) and planogram crops.
