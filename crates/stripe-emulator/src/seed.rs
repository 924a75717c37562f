//! `--seed FILE`: products and prices to load at start (and after a reset), with stable ids.
//!
//! ```json
//! {"products": [{"id": "prod_pro", "name": "Pro", "prices": [
//!   {"id": "price_pro_monthly", "unit_amount": 1000, "currency": "usd", "interval": "month"}]}]}
//! ```

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::form::Params;
use crate::store::Store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    pub products: Vec<SeedProduct>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProduct {
    pub id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub prices: Vec<SeedPrice>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPrice {
    pub id: Option<String>,
    pub unit_amount: i64,
    pub currency: String,
    /// `day`, `week`, `month` or `year`; absent for a one-time price.
    pub interval: Option<String>,
    pub interval_count: Option<i64>,
    pub nickname: Option<String>,
    pub lookup_key: Option<String>,
}

fn encode(pairs: &[(&str, Option<String>)]) -> Vec<u8> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            out.append_pair(k, v);
        }
    }
    out.finish().into_bytes()
}

pub fn load(store: &mut Store, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read seed file {}", path.display()))?;
    let seed: SeedFile = serde_json::from_str(&text).with_context(|| format!("seed file {} is not valid", path.display()))?;
    apply(store, &seed.products)
}

/// Create the seed's products and prices through the same code as the API, so they are validated alike.
pub fn apply(store: &mut Store, products: &[SeedProduct]) -> anyhow::Result<()> {
    for product in products {
        let params = Params::parse(&encode(&[
            ("id", product.id.clone()),
            ("name", Some(product.name.clone())),
            ("description", product.description.clone()),
        ]))?;
        let created = crate::resources::products::create_in(store, &params)
            .map_err(|e| anyhow::anyhow!("seed product {}: {}", product.name, e.message))?;
        let product_id = created["id"].as_str().unwrap_or_default().to_string();
        for price in &product.prices {
            if price.interval.is_none() && price.interval_count.is_some() {
                bail!("seed price {:?}: interval_count needs an interval", price.id);
            }
            let params = Params::parse(&encode(&[
                ("product", Some(product_id.clone())),
                ("unit_amount", Some(price.unit_amount.to_string())),
                ("currency", Some(price.currency.clone())),
                ("recurring[interval]", price.interval.clone()),
                ("recurring[interval_count]", price.interval_count.map(|c| c.to_string())),
                ("nickname", price.nickname.clone()),
                ("lookup_key", price.lookup_key.clone()),
            ]))?;
            crate::resources::prices::create_in(store, &params, price.id.as_deref())
                .map_err(|e| anyhow::anyhow!("seed price {:?}: {}", price.id, e.message))?;
        }
    }
    Ok(())
}
