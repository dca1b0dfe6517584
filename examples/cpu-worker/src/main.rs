//! `cpu-worker [limit] [rounds]`: counts the primes below `limit` (default
//! 200000) by trial division, `rounds` times (default 1, 0 = forever),
//! printing one line per round. Pure CPU: no syscalls inside a round.

fn count_primes(limit: u32) -> u32 {
    let mut count = 0;
    for n in 2..limit {
        let mut d = 2;
        let mut prime = true;
        while d * d <= n {
            if n % d == 0 {
                prime = false;
                break;
            }
            d += 1;
        }
        count += u32::from(prime);
    }
    count
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut round = 0;
    while rounds == 0 || round < rounds {
        let n = count_primes(std::hint::black_box(limit));
        println!("round {round}: {n} primes below {limit}");
        round += 1;
    }
}
