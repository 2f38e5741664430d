#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(yaml) = std::str::from_utf8(data) {
        let _ = federator::hub::kube::parse_kubeconfig(yaml, "input");
    }
});
