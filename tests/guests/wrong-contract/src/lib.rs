//! A component that exports `oasis:policy/policy@0.1.0` with the contract's
//! function names but other types: `describe` returns a string, `score` takes
//! a count. The host must refuse it as the wrong contract, naming what it
//! expected and what it found.

wit_bindgen::generate!({
    world: "scoring-policy",
    path: "wit",
});

struct WrongTypes;

impl exports::oasis::policy::policy::Guest for WrongTypes {
    fn describe() -> String {
        "not metadata".to_string()
    }

    fn validate_settings(_settings_json: String) -> Result<(), String> {
        Ok(())
    }

    fn score(_settings_json: String, count: u32) -> Vec<f64> {
        vec![0.0; count as usize]
    }
}

export!(WrongTypes);
