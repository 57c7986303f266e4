//! Ranking for kiosk requests: popularity fallback, model scoring, exclusions, reasons.
