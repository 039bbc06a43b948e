//! `tailgate-loadtest`: parse flags, run the scenario, print the table, write `--json`, and
//! exit non-zero when any line was lost, doubled or reordered (1) or errors occurred (2).

use std::process::ExitCode;

use clap::Parser;
use tailgate_loadtest::{procs, Settings};

fn main() -> ExitCode {
    let settings = Settings::parse();
    if settings.child {
        return procs::child_main();
    }
    if let Err(msg) = settings.validate() {
        eprintln!("tailgate-loadtest: {msg}");
        return ExitCode::from(64);
    }
    if let Some(dir) = &settings.corpus {
        if let Err(e) = tailgate_loadtest::line::load_corpus(dir) {
            eprintln!("tailgate-loadtest: --corpus {}: {e}", dir.display());
            return ExitCode::from(64);
        }
    }
    let threads = match settings.threads {
        0 if settings.procs > 1 => 1,
        0 => 2,
        n => n,
    };
    let runtime = match procs::runtime(threads, "tailgate-loadtest") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match runtime.block_on(tailgate_loadtest::run(&settings)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tailgate-loadtest: {}", tailgate::client::error_chain(&e));
            return ExitCode::from(70);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &settings.json {
        if let Err(e) = std::fs::write(path, report.to_json() + "\n") {
            eprintln!("tailgate-loadtest: cannot write {}: {e}", path.display());
            return ExitCode::from(70);
        }
    }
    ExitCode::from(report.exit_code())
}
