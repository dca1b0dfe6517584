//! `misbehave loop` spins forever without a syscall, `misbehave bomb`
//! allocates and touches 1 MiB after 1 MiB until it is stopped,
//! `misbehave trap` traps, `misbehave recurse` overflows its stack.
//! For the runtime's containment tests.

fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    if pad[5] == u64::MAX {
        return 0;
    }
    recurse(pad[3] + 1) + pad[7]
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    println!("misbehave: {mode}");
    match mode.as_str() {
        "loop" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                if hoard.len() % 16 == 0 {
                    println!("holding {} MiB", hoard.len());
                }
                std::hint::black_box(&hoard);
            }
        }
        "trap" => panic!("misbehave asked to trap"),
        "recurse" => println!("{}", recurse(0)),
        other => {
            eprintln!("misbehave: unknown mode {other:?} (loop, bomb, trap, recurse)");
            std::process::exit(2);
        }
    }
}
