//! `POST /v1/billing_portal/sessions`: a link to the hosted portal page for one customer.

use axum::extract::State;
use serde_json::json;

use super::ApiResult;
use crate::app::Emulator;
use crate::http::{respond, ApiRequest};
use crate::store::new_id;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["customer", "return_url", "configuration", "flow_data", "locale", "on_behalf_of", "expand"])?;
    let customer = p.required_str("customer")?.to_string();
    let return_url = p.non_empty_str("return_url")?.map(str::to_string);
    if let Some(url) = &return_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(p.invalid("return_url", format!("Not a valid URL: {url}")));
        }
    }
    if let Some(flow) = p.hash("flow_data")? {
        flow.allow(&["type", "after_completion", "subscription_cancel", "subscription_update", "subscription_update_confirm"])?;
        flow.one_of("type", &["payment_method_update", "subscription_cancel", "subscription_update", "subscription_update_confirm"])?;
    }
    let session = emu.apply(&req.info, |store| {
        store.get_kind("customer", &customer, Some("customer"))?;
        let id = new_id("bps_");
        let session = json!({
            "id": id,
            "object": "billing_portal.session",
            "configuration": "bpc_emulator_default",
            "created": store.now(),
            "customer": customer,
            "customer_account": null,
            "flow": null,
            "livemode": false,
            "locale": p.non_empty_str("locale")?,
            "on_behalf_of": null,
            "return_url": return_url,
            "url": format!("{}/p/session/{id}", emu.public_url),
        });
        store.insert(session.clone());
        Ok(session)
    })?;
    respond(&emu, &req, &session)
}
