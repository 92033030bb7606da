//! Synthetic NGO data (placeholder, filled in below).
