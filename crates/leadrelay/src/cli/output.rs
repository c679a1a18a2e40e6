//! What the commands write: results on stdout, messages on stderr.
//!
//! A closed stdout (`leadrelay sources kinds | head -1`) ends the command
//! quietly with success instead of a panic; with `--log-format json` every
//! stderr line is a JSON log record, messages and configuration warnings
//! included.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets whether stderr messages are JSON log records.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether stderr carries JSON log records only.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes to stdout. If the reader has gone away (a closed pipe) there is
/// no one to tell, so the process ends with success; any other write
/// failure ends it with failure.
pub fn stdout(args: fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_fmt(args)
        .and_then(|_| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|_| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        message(Level::Error, &format!("cannot write to stdout: {e}"));
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
}

/// One message for the person at the terminal: plain text on stderr, or a
/// JSON log record with `--log-format json`. Never panics (a closed stderr
/// loses the message).
pub fn message(level: Level, text: &str) {
    if JSON.load(Ordering::Relaxed) {
        // One record per line of a multi-line message.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = line.trim_start();
            match level {
                Level::Error => tracing::error!("{line}"),
                Level::Warning => tracing::warn!("{line}"),
                Level::Info => tracing::info!("{line}"),
            }
        }
    } else {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = err.write_all(b"\n");
        }
    }
}

/// `println!` for results: see [`stdout`].
macro_rules! outln {
    () => { $crate::cli::output::stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::output::stdout(format_args!($($arg)*), true) };
}

/// `print!` for results: see [`stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::stdout(format_args!($($arg)*), false) };
}

/// `eprintln!` for errors: see [`message`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::message($crate::cli::output::Level::Error, &format!($($arg)*))
    };
}

pub(crate) use {errln, out, outln};
