//! Helpers shared by the integration tests that drive the real `settlewatch` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use settlement::store::Store;

/// The binary under test.
pub fn settlewatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_settlewatch"));
    // The tests pass everything explicitly; nothing may leak in from the caller's shell.
    command.env_remove("SETTLEWATCH_CONFIG").env_remove("SETTLEWATCH_DATABASE_URL").env("RUST_LOG", "warn,sqlx=error");
    command
}

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A finished run of the binary, with its output as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(args: &str, output: Output) -> Run {
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !run.stderr.contains("panicked") && run.code != Some(101),
            "settlewatch {args} panicked:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "unexpected exit code; stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Runs `settlewatch` with `args` in `dir` and waits for it.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    let output = settlewatch().current_dir(dir).args(args).output().expect("settlewatch starts");
    Run::from_output(&args.join(" "), output)
}

/// A single-threaded runtime for the store checks the tests make directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Opens the SQLite ledger at `path` through the settlement crate's public API.
pub async fn open_store(path: &Path) -> Store {
    Store::open(&format!("sqlite:{}", path.display())).await.expect("the store opens")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the target directory");
    for entry in std::fs::read_dir(from).expect("read the source directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}
