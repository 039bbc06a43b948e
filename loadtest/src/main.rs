//! `tailgate-loadtest`: load scenarios with correctness accounting.

fn main() {}
