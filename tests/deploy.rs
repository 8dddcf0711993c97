//! The deployment files: the systemd unit passes `systemd-analyze verify` and carries the
//! settings operations rely on.

use std::process::Command;

const UNIT: &str = include_str!("../deploy/tickfan.service");

#[test]
fn systemd_unit_verifies_and_has_the_required_settings() {
    for setting in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=",
        "LimitNOFILE=",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(setting)),
            "unit lacks {setting}"
        );
    }
    // Verify a copy whose ExecStart points at the binary under test.
    let dir = std::env::temp_dir().join(format!("tickfan-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("tickfan.service");
    let text = UNIT.replace("/usr/local/bin/tickfan", env!("CARGO_BIN_EXE_tickfan"));
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd; .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("tickfan.service:"),
        "{stderr}"
    );
}
