//! Products and prices: creating them (from the API or from seeds), and loading the seed file.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::config::{SeedFile, SeedProduct};
use crate::model::{new_id, str_field, ApiError};
use crate::store::Store;

pub const INTERVALS: &[&str] = &["day", "week", "month", "year"];

/// A product to create; the API has checked each field's form.
#[derive(Default)]
pub struct NewProduct {
    pub id: Option<String>,
    pub name: String,
    pub active: bool,
    pub description: Option<String>,
    pub images: Vec<String>,
    pub metadata: Map<String, Value>,
    pub shippable: Option<bool>,
    pub statement_descriptor: Option<String>,
    pub tax_code: Option<String>,
    pub unit_label: Option<String>,
    pub url: Option<String>,
}

pub fn create_product(store: &mut Store, new: NewProduct) -> Result<Value, ApiError> {
    let id = match new.id {
        Some(id) if store.contains(&id) => {
            return Err(ApiError::invalid(format!("Product already exists: {id}"), Some("id"), "resource_already_exists"))
        }
        Some(id) => id,
        None => new_id("prod_"),
    };
    let now = store.now();
    let product = json!({
        "id": id,
        "object": "product",
        "active": new.active,
        "created": now,
        "default_price": null,
        "description": new.description,
        "images": new.images,
        "livemode": false,
        "marketing_features": [],
        "metadata": new.metadata,
        "name": new.name,
        "package_dimensions": null,
        "shippable": new.shippable,
        "statement_descriptor": new.statement_descriptor,
        "tax_code": new.tax_code,
        "tax_details": null,
        "type": "service",
        "unit_label": new.unit_label,
        "updated": now,
        "url": new.url,
    });
    store.insert(product.clone());
    store.emit("product.created", &product, None);
    Ok(product)
}

/// A recurring price's cycle.
pub struct Recurring {
    pub interval: String,
    pub interval_count: i64,
    pub trial_period_days: Option<i64>,
    pub usage_type: String,
    /// A metered price's meter (`mtr_…`): what counts its usage.
    pub meter: Option<String>,
}

/// Where a new price's product comes from.
pub enum PriceProduct {
    Existing(String),
    New(NewProduct),
}

/// A price to create; the API has checked each field's form (currency, amount, interval counts).
pub struct NewPrice {
    /// Honoured only for seeding (Stripe's API has no such parameter).
    pub id: Option<String>,
    pub product: PriceProduct,
    pub currency: String,
    pub unit_amount: i64,
    pub recurring: Option<Recurring>,
    pub lookup_key: Option<String>,
    pub transfer_lookup_key: bool,
    pub nickname: Option<String>,
    pub active: bool,
    pub metadata: Map<String, Value>,
    pub tax_behavior: String,
}

pub fn create_price(store: &mut Store, new: NewPrice) -> Result<Value, ApiError> {
    let product = match new.product {
        PriceProduct::Existing(id) => {
            store.get_kind("product", &id, Some("product"))?;
            id
        }
        PriceProduct::New(product) => str_field(&create_product(store, product)?, "id"),
    };
    if let Some(key) = &new.lookup_key {
        let taken: Vec<String> =
            store.iter_kind("price", None).filter(|p| p["lookup_key"] == key.as_str()).map(|p| str_field(p, "id")).collect();
        if !taken.is_empty() && !new.transfer_lookup_key {
            return Err(ApiError::invalid(
                format!("A price (`{}`) already uses that lookup key.", taken[0]),
                Some("lookup_key"),
                "parameter_invalid_string",
            ));
        }
        for other in taken {
            store.commit(&other, Map::from_iter([("lookup_key".to_string(), Value::Null)]), "price.updated");
        }
    }
    let id = match new.id {
        Some(id) if store.contains(&id) => {
            return Err(ApiError::invalid(format!("Price already exists: {id}"), Some("id"), "resource_already_exists"))
        }
        Some(id) => id,
        None => new_id("price_"),
    };
    if let Some(meter) = new.recurring.as_ref().and_then(|r| r.meter.as_deref()) {
        store.get_kind("billing.meter", meter, Some("recurring[meter]"))?;
    }
    let recurring = match &new.recurring {
        None => Value::Null,
        Some(r) => json!({
            "interval": r.interval,
            "interval_count": r.interval_count,
            "meter": r.meter,
            "trial_period_days": r.trial_period_days,
            "usage_type": r.usage_type,
        }),
    };
    let price = json!({
        "id": id,
        "object": "price",
        "active": new.active,
        "billing_scheme": "per_unit",
        "created": store.now(),
        "currency": new.currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": new.lookup_key,
        "metadata": new.metadata,
        "nickname": new.nickname,
        "product": product,
        "recurring": recurring,
        "tax_behavior": new.tax_behavior,
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring.is_null() { "one_time" } else { "recurring" },
        "unit_amount": new.unit_amount,
        "unit_amount_decimal": new.unit_amount.to_string(),
    });
    store.insert(price.clone());
    store.emit("price.created", &price, None);
    Ok(price)
}

/// The products of a seed file (`--seed`).
pub fn read_seed_file(path: &Path) -> anyhow::Result<Vec<SeedProduct>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read seed file {}", path.display()))?;
    let seed: SeedFile = serde_json::from_str(&text).with_context(|| format!("seed file {} is not valid", path.display()))?;
    Ok(seed.products)
}

/// Create seeded products and prices. Those with an id already stored (a data file kept from an
/// earlier run) are left as they are; those without an id are created only in an empty catalogue.
pub fn seed(store: &mut Store, products: &[SeedProduct]) -> anyhow::Result<()> {
    let empty = store.iter_kind("product", None).next().is_none();
    for product in products {
        if !product.id.as_ref().map_or(empty, |id| !store.contains(id)) {
            continue;
        }
        let valid_text = |text: &str| !text.trim().is_empty() && text.len() <= 5000;
        anyhow::ensure!(valid_text(&product.name), "seed product {:?}: a name is required", product.id);
        let created = create_product(
            store,
            NewProduct {
                id: product.id.clone(),
                name: product.name.clone(),
                active: true,
                description: product.description.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("seed product {}: {}", product.name, e.message))?;
        let product_id = str_field(&created, "id");
        for price in &product.prices {
            let label = price.id.clone().unwrap_or_else(|| format!("of {}", product.name));
            anyhow::ensure!(price.unit_amount >= 0, "seed price {label}: unit_amount must be at least 0");
            anyhow::ensure!(
                price.currency.len() == 3 && price.currency.chars().all(|c| c.is_ascii_alphabetic()),
                "seed price {label}: invalid currency {}",
                price.currency
            );
            let recurring = match (&price.interval, price.interval_count) {
                (None, None) => None,
                (None, Some(_)) => anyhow::bail!("seed price {label}: interval_count needs an interval"),
                (Some(interval), count) => {
                    anyhow::ensure!(INTERVALS.contains(&interval.as_str()), "seed price {label}: invalid interval {interval}");
                    let count = count.unwrap_or(1);
                    anyhow::ensure!((1..=max_interval_count(interval)).contains(&count), "seed price {label}: invalid interval_count");
                    Some(Recurring {
                        interval: interval.clone(),
                        interval_count: count,
                        trial_period_days: None,
                        usage_type: "licensed".into(),
                        meter: None,
                    })
                }
            };
            create_price(
                store,
                NewPrice {
                    id: price.id.clone(),
                    product: PriceProduct::Existing(product_id.clone()),
                    currency: price.currency.to_ascii_lowercase(),
                    unit_amount: price.unit_amount,
                    recurring,
                    lookup_key: price.lookup_key.clone(),
                    transfer_lookup_key: false,
                    nickname: price.nickname.clone(),
                    active: true,
                    metadata: Map::new(),
                    tax_behavior: "unspecified".into(),
                },
            )
            .map_err(|e| anyhow::anyhow!("seed price {label}: {}", e.message))?;
        }
    }
    Ok(())
}

/// Stripe's longest cycle is a year: 365 days, 52 weeks, 12 months or 1 year.
pub fn max_interval_count(interval: &str) -> i64 {
    match interval {
        "day" => 365,
        "week" => 52,
        "month" => 12,
        _ => 1,
    }
}
