//! `--data FILE`: the real binary is killed mid-flow and started again on the same file; the
//! state it had answered with is all there, and the flow goes on from it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::helpers::{id, TestEmulator};

struct Process {
    child: Child,
    emulator: TestEmulator,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stripe-emulator"))
        .args(["--port", "0", "--seed", test_support::SEED, "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the emulator binary starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Process { child, emulator: TestEmulator::at(url) }
}

#[tokio::test]
async fn a_restart_on_the_same_data_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state.jsonl");
    let first = start(&data);
    let emu = &first.emulator;
    let (_, session) = emu.open_session(&[]).await;
    assert_eq!(emu.pay(&session, "4242424242424242").await.status, 303);
    let sub_id = emu.get(&format!("/v1/checkout/sessions/{session}"), &[]).await["subscription"].as_str().unwrap().to_string();
    let advanced = emu.form("/_emulator/clock/advance", "seconds=86400").await;
    assert_eq!(advanced.status, 200);
    let clock = id(&emu.post("/v1/test_helpers/test_clocks", &[("frozen_time", "1767225600")]).await);
    let clocked = id(&emu
        .post(
            "/v1/customers",
            &[
                ("email", "later@example.com"),
                ("test_clock", &clock),
                ("payment_method", "pm_card_visa"),
                ("invoice_settings[default_payment_method]", "pm_card_visa"),
            ],
        )
        .await);
    let clocked_sub = id(&emu.post("/v1/subscriptions", &[("customer", &clocked), ("items[0][price]", "price_pro_monthly")]).await);

    let snapshot = |emu: &TestEmulator| {
        let emu = emu.clone();
        let (sub_id, clock, clocked_sub) = (sub_id.clone(), clock.clone(), clocked_sub.clone());
        async move {
            let events = emu.get("/v1/events", &[("limit", "100")]).await["data"].clone();
            let control =
                test_support::Reply::read(emu.client.get(format!("{}/_emulator/clock", emu.url)).send().await.unwrap()).await.json();
            (
                emu.get(&format!("/v1/subscriptions/{sub_id}"), &[("expand[]", "latest_invoice")]).await,
                events,
                control["offset_seconds"].as_i64().unwrap(),
                emu.get(&format!("/v1/test_helpers/test_clocks/{clock}"), &[]).await,
                emu.get(&format!("/v1/subscriptions/{clocked_sub}"), &[]).await,
            )
        }
    };
    let before = snapshot(emu).await;
    assert!(before.2 >= 86_399, "the control clock was moved");
    drop(first); // SIGKILL: nothing is flushed on the way out

    let second = start(&data);
    let after = snapshot(&second.emulator).await;
    assert_eq!(after.0, before.0, "the subscription and its invoice");
    assert_eq!(after.1, before.1, "every event, in order");
    assert!((after.2 - before.2).abs() <= 1, "the control clock");
    assert_eq!(after.3, before.3, "the test clock");
    assert_eq!(after.4, before.4, "the clocked subscription");
    // The seed is not loaded twice, and the flow goes on from the kept state.
    assert_eq!(second.emulator.get("/v1/prices", &[]).await["data"].as_array().unwrap().len(), 2);
    let canceled = second.emulator.call(reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(canceled.body["status"], "canceled");
    drop(second);
    let third = start(&data);
    assert_eq!(third.emulator.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["status"], "canceled");
    drop(third);
}
