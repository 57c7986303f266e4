//! The technician's self-test (`doctor`): one line per check, and the `status` report.
