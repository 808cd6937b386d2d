//! A WebAssembly component that exports an unrelated function: loading it as
//! a policy must fail with a wrong-world error, not a crash.

/// An export no Oasis host asks for.
#[unsafe(no_mangle)]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a + b
}
