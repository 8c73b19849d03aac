//! Reading a command's standard output as a backup source (`--stdin-from-command`).
//!
//! The reader reports end-of-stream only after the command has exited successfully; a
//! non-zero exit turns into a read error, so a failed `pg_dump` can never be saved as if it
//! were a complete dump.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::{Error, Result};

/// A running command whose stdout is being read.
#[derive(Debug)]
pub struct CommandReader {
    child: Child,
    stdout: Option<ChildStdout>,
    program: String,
}

impl CommandReader {
    /// Starts `argv[0]` with arguments `argv[1..]`; stderr goes to vault's stderr.
    pub fn spawn(argv: &[std::ffi::OsString]) -> Result<Self> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::InvalidInput("no command given".into()));
        };
        let shown =
            crate::quote::quote_bytes(std::os::unix::ffi::OsStrExt::as_bytes(program.as_os_str()));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::Aborted(format!(
                    "cannot run {shown}: {}; no snapshot saved",
                    crate::error::io_message(&e)
                ))
            })?;
        let stdout = child.stdout.take();
        Ok(Self {
            child,
            stdout,
            program: shown,
        })
    }
}

impl Read for CommandReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(out) = self.stdout.as_mut() {
            let n = out.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.stdout = None;
        }
        let status = self.child.wait()?;
        if status.success() {
            Ok(0)
        } else {
            Err(std::io::Error::other(format!(
                "command {} failed ({status}); no snapshot saved",
                self.program
            )))
        }
    }
}

impl Drop for CommandReader {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
