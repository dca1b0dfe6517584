//! Built both as a WASI preview 1 core module and as a preview 2 component.
//!
//! Steps run in order, each a word and its operands:
//! `exit CODE`, `env`, `cat PATH`, `write PATH TEXT`, `ls PATH`,
//! `sleep MS`, `ticks N MS` (N = 0: forever), `echo TEXT`, `stderr TEXT`.
//! With no steps it prints `job done` and exits 0.

use std::io::Write;
use std::time::Duration;

fn fail(message: String, code: i32) -> ! {
    eprintln!("job: {message}");
    exit(code)
}

/// `std::process::exit` on a WASI 0.2 component can only say 0 or 1.
fn exit(code: i32) -> ! {
    std::io::stdout().flush().ok();
    #[cfg(all(target_os = "wasi", target_env = "p2"))]
    if code != 0 {
        wasi::cli::exit::exit_with_code(code as u8);
    }
    std::process::exit(code)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("job done");
        return;
    }
    let mut it = args.into_iter();
    while let Some(word) = it.next() {
        let mut operand = |what: &str| {
            it.next()
                .unwrap_or_else(|| fail(format!("{word}: missing {what}"), 2))
        };
        match word.as_str() {
            "exit" => {
                let code: i32 = operand("exit code").parse().unwrap_or(1);
                println!("exiting with {code}");
                eprintln!("job: exit {code}");
                exit(code);
            }
            "env" => {
                let mut env: Vec<(String, String)> = std::env::vars().collect();
                env.sort();
                for (k, v) in env {
                    println!("{k}={v}");
                }
            }
            "cat" => {
                let path = operand("path");
                match std::fs::read_to_string(&path) {
                    Ok(s) => print!("{s}"),
                    Err(e) => fail(format!("cat {path}: {e}"), 1),
                }
            }
            "write" => {
                let path = operand("path");
                let text = operand("text");
                if let Err(e) = std::fs::write(&path, text.as_bytes()) {
                    fail(format!("write {path}: {e}"), 1);
                }
                println!("wrote {path}");
            }
            "ls" => {
                let path = operand("path");
                let rd =
                    std::fs::read_dir(&path).unwrap_or_else(|e| fail(format!("ls {path}: {e}"), 1));
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
            }
            "sleep" => {
                let ms: u64 = operand("milliseconds").parse().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
            }
            "ticks" => {
                let n: u64 = operand("count").parse().unwrap_or(0);
                let ms: u64 = operand("milliseconds").parse().unwrap_or(100);
                let mut i = 0;
                while n == 0 || i < n {
                    println!("tick {i}");
                    std::io::stdout().flush().ok();
                    std::thread::sleep(Duration::from_millis(ms));
                    i += 1;
                }
            }
            "echo" => println!("{}", operand("text")),
            "stderr" => eprintln!("{}", operand("text")),
            other => fail(format!("unknown step {other:?}"), 2),
        }
    }
}
