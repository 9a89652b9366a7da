//! `scripts/test.sh`, the README's test command, run by bash with a PATH of stand-ins: it
//! installs exactly what is missing, without prompting, then hands its arguments to
//! `cargo test --workspace`; with everything present it installs nothing. The stand-ins record
//! how they were called, so nothing is installed for real and no test suite is started.
#![cfg(unix)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::temp_dir;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// An absolute path to a real program (the stand-ins' PATH does not have it).
fn real(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

fn write_exe(path: &Path, body: &str) {
    let script = format!("#!{}\n{body}", real("bash").display());
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A folder of stand-ins: `bin/` is the whole PATH, `log/` what they were asked.
struct Machine {
    bin: PathBuf,
    log: PathBuf,
    /// Stands for /usr/lib/postgresql, where Debian puts initdb (off PATH).
    pg_lib: PathBuf,
}

/// Every command the script checks for, with the package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("redis-server", "redis-server"),
    ("initdb", "postgresql"),
    ("wrk", "wrk"),
    ("hyperfine", "hyperfine"),
    ("curl", "curl"),
    ("ip", "iproute2"),
];

impl Machine {
    /// A machine with every tool except `missing`; `venv`: whether `python3 -m venv` works.
    fn new(name: &str, missing: &[&str], venv: bool) -> Self {
        let dir = temp_dir(&format!("test-script-{name}"));
        let (bin, log, pg_lib) = (dir.join("bin"), dir.join("log"), dir.join("pg-lib"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        for (tool, _) in TOOLS.iter().filter(|(t, _)| !missing.contains(t)) {
            write_exe(&bin.join(tool), "exit 0\n");
        }
        if venv {
            std::fs::write(log.join("venv"), "").unwrap();
        }
        let log_dir = log.display();
        let bin_dir = bin.display();
        let chmod = real("chmod");
        write_exe(
            &bin.join("python3"),
            &format!("[ \"$1 $2\" = '-m venv' ] && [ ! -e {log_dir}/venv ] && exit 1\nexit 0\n"),
        );
        write_exe(
            &bin.join("cargo"),
            &format!(
                "pwd > {log_dir}/cargo-cwd\nprintf '%s\\n' \"$@\" > {log_dir}/cargo\nexit \"${{CARGO_EXIT:-0}}\"\n"
            ),
        );
        // Records each call with the frontend it was given and whether the caller's standard
        // input reached it (a prompt could read an answer meant for someone else, or hang); `install` makes the packages' commands appear (unless APT_NOOP).
        let mut provide = String::new();
        for (tool, package) in TOOLS {
            provide.push_str(&format!(
                "      {package}) printf 'exit 0\\n' > {bin_dir}/{tool}; {chmod} +x {bin_dir}/{tool} ;;\n",
                chmod = chmod.display()
            ));
        }
        write_exe(
            &bin.join("apt-get"),
            &format!(
                "stdin=none; read -r -t 1 _ && stdin=data\n\
                 echo \"$DEBIAN_FRONTEND $stdin $*\" >> {log_dir}/apt\n\
                 [ -n \"$APT_EXIT\" ] && exit \"$APT_EXIT\"\n\
                 if [ \"$1\" = install ] && [ -z \"$APT_NOOP\" ]; then\n  for p in \"$@\"; do\n    case $p in\n{provide}      python3-venv) : > {log_dir}/venv ;;\n    esac\n  done\nfi\nexit 0\n"
            ),
        );
        // For a run as another user than root: the script asks sudo, never for a password.
        write_exe(
            &bin.join("sudo"),
            &format!(
                "echo \"$*\" >> {log_dir}/sudo\nwhile [ \"${{1#-}}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n"
            ),
        );
        Self { bin, log, pg_lib }
    }

    /// Runs the script with `yes` waiting on its standard input, which apt-get must not see.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(real("bash"));
        cmd.arg(workspace().join("scripts/test.sh"))
            .args(args)
            .env_clear()
            .env("PATH", &self.bin)
            .env("IBAUTH_PG_LIB", &self.pg_lib)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The script may be done (and the pipe closed) before this is written.
        let _ = stdin.write_all(b"yes\n");
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn log(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.log.join(name)).ok()
    }

    fn cargo_args(&self) -> Option<Vec<String>> {
        self.log("cargo")
            .map(|t| t.lines().map(str::to_owned).collect())
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn with_everything_present_it_installs_nothing_and_runs_the_workspace_tests() {
    let machine = Machine::new("present", &[], true);
    let output = machine.run(&["-p", "ibauth", "--", "--nocapture"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(machine.log("apt"), None, "nothing to install");
    assert_eq!(
        machine.cargo_args().unwrap(),
        ["test", "--workspace", "-p", "ibauth", "--", "--nocapture"]
    );
    assert_eq!(
        machine.log("cargo-cwd").unwrap().trim(),
        workspace().to_str().unwrap(),
        "runs from the workspace root wherever it is called from"
    );

    // cargo's verdict is the script's.
    let output = machine.run(&[], &[("CARGO_EXIT", "101")]);
    assert_eq!(output.status.code(), Some(101), "{}", text(&output));
}

#[test]
fn postgresql_off_path_where_debian_puts_it_counts_as_installed() {
    let machine = Machine::new("pg-off-path", &["initdb"], true);
    let output = machine.run(&[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        machine.log("apt").unwrap().lines().last().unwrap(),
        "noninteractive none install -y -qq postgresql",
        "no initdb on PATH nor under /usr/lib/postgresql: installed"
    );

    let machine = Machine::new("pg-debian", &["initdb"], true);
    let bin = machine.pg_lib.join("15/bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_exe(&bin.join("initdb"), "exit 0\n");
    let output = machine.run(&[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        machine.log("apt"),
        None,
        "/usr/lib/postgresql/15/bin/initdb is enough"
    );
}

#[test]
fn it_installs_exactly_what_is_missing_without_a_prompt_then_runs_the_tests() {
    let machine = Machine::new("missing", &["chromium", "chromedriver", "wrk"], false);
    let output = machine.run(&[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let apt = machine.log("apt").unwrap();
    let calls: Vec<&str> = apt.lines().collect();
    assert_eq!(
        calls,
        [
            "noninteractive none update -qq",
            "noninteractive none install -y -qq chromium chromium-driver wrk python3-venv"
        ],
        "non-interactive, no standard input, only the missing packages"
    );
    assert_eq!(machine.cargo_args().unwrap(), ["test", "--workspace"]);

    // Idempotent: the second run finds everything and installs nothing more.
    let output = machine.run(&[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(machine.log("apt").unwrap().lines().count(), 2);
}

#[test]
fn a_failed_install_stops_before_the_tests_and_says_what_to_install() {
    let machine = Machine::new("apt-fails", &["chromedriver"], true);
    let output = machine.run(&[], &[("APT_EXIT", "100")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("apt-get install chromium-driver"),
        "{stderr}"
    );
    assert_eq!(machine.cargo_args(), None, "no test run without its tools");

    // apt-get claims success but the command is still not there.
    let machine = Machine::new("apt-noop", &["hyperfine"], true);
    let output = machine.run(&[], &[("APT_NOOP", "1")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hyperfine installed but still not usable"),
        "{stderr}"
    );
    assert_eq!(machine.cargo_args(), None);
}
