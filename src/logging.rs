//! Logging: simplelog to stderr (journald) or to a file that is reopened on SIGHUP (logrotate),
//! RFC 3339 UTC timestamps, and a level that can change at run time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::LevelFilter;

/// Changes the running logger: level and file reopening.
#[derive(Debug, Clone)]
pub struct LogControl {
    reopen: Arc<AtomicBool>,
    file: Option<PathBuf>,
}

impl LogControl {
    /// Sets the level for every thread from now on.
    pub fn set_level(&self, level: LevelFilter) {
        log::set_max_level(level);
    }

    /// Reopens the log file before the next line (after logrotate moved it). No-op on stderr.
    pub fn reopen(&self) {
        if self.file.is_some() {
            self.reopen.store(true, Ordering::Release);
        }
    }

    /// The log file, if logging to one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// A file writer that reopens its path when asked (the old file may have been renamed).
struct ReopeningFile {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reopen.swap(false, Ordering::AcqRel) {
            // If the new file cannot be opened, keep writing to the old one.
            if let Ok(f) = open_append(&self.path) {
                self.file = f;
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts logging at `level`, to `file` (appending) or stderr.
pub fn init(level: LevelFilter, file: Option<&Path>) -> io::Result<LogControl> {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let reopen = Arc::new(AtomicBool::new(false));
    // The logger itself passes everything; `log::set_max_level` does the filtering, so the
    // level can change at run time.
    let result = match file {
        Some(path) => {
            let writer = ReopeningFile {
                path: path.to_path_buf(),
                file: open_append(path)?,
                reopen: reopen.clone(),
            };
            simplelog::WriteLogger::init(LevelFilter::Trace, config, writer)
        }
        None => simplelog::WriteLogger::init(LevelFilter::Trace, config, io::stderr()),
    };
    result.map_err(|e| io::Error::other(e.to_string()))?;
    log::set_max_level(level);
    Ok(LogControl {
        reopen,
        file: file.map(Path::to_path_buf),
    })
}
