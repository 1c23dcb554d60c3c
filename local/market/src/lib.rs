//! The offline marketplace (issue #3).
