//! The generic runtime harness (skiff_sdk::runtime::conformance) against the
//! wasm runtime, once with the job example as a WASI preview 2 component and
//! once as a preview 1 core module.

mod common;

use std::path::PathBuf;

use skiff_sdk::runtime::conformance::{self, Step, Workloads};
use skiff_sdk::runtime::{ContainerSpec, ImageSource};

struct Job {
    guest: PathBuf,
    dir: PathBuf,
}

impl Workloads for Job {
    fn spec(&self, id: &str, steps: &[Step]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            id,
            ImageSource::File(self.guest.clone()),
            self.dir.join("logs").join(id).join("0.log"),
        );
        for step in steps {
            let words: Vec<String> = match step {
                Step::Echo(t) => vec!["echo".into(), t.clone()],
                Step::Stderr(t) => vec!["stderr".into(), t.clone()],
                Step::Env => vec!["env".into()],
                Step::Cat(p) => vec!["cat".into(), p.clone()],
                Step::Write(p, t) => vec!["write".into(), p.clone(), t.clone()],
                Step::TickForever(ms) => vec!["ticks".into(), "0".into(), ms.to_string()],
                Step::Exit(c) => vec!["exit".into(), c.to_string()],
            };
            spec.args.extend(words);
        }
        spec
    }

    fn scratch_dir(&self) -> PathBuf {
        self.dir.join("scratch")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_component() {
    let f = common::runtime();
    let w = Job {
        guest: common::wasm("job.wasm"),
        dir: f.dir.path().to_path_buf(),
    };
    conformance::run_all(&f.runtime, &w, "p2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_core_module() {
    let f = common::runtime();
    let w = Job {
        guest: common::wasm("job.p1.wasm"),
        dir: f.dir.path().to_path_buf(),
    };
    conformance::run_all(&f.runtime, &w, "p1").await;
}
