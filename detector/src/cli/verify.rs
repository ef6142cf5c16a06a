//! `settlewatch verify`: the ledger integrity check; exits non-zero with every finding.

use std::process::ExitCode;

use settlement::store::FINDINGS_MAX;

pub async fn run(context: &super::Context) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let store = context.store(&config).await?;
    let report = store.verify().await?;
    store.close().await;
    println!(
        "checked {} transactions, {} postings, {} accounts",
        report.transactions_checked, report.postings_checked, report.accounts_checked
    );
    if report.is_clean() {
        println!("ledger verified: every content hash matches, every transaction's postings follow the rules and balance, every balance equals its postings, every currency's trial balance is zero");
        return Ok(ExitCode::SUCCESS);
    }
    for finding in &report.findings {
        println!("FINDING: {finding}");
    }
    if report.findings_total > FINDINGS_MAX as u64 {
        println!("... and {} more findings", report.findings_total - FINDINGS_MAX as u64);
    }
    println!("ledger verification FAILED: {} findings", report.findings_total);
    Ok(ExitCode::from(2))
}
