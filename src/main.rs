fn main() {
    println!("retort");
}
