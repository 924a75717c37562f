//! `cargo run -p example-product`: Tollgate's flow plus the product's `/product` and `/api/usage`,
//! configured like Tollgate itself (offline by default).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = tollgate::Settings::from_env()?;
    tollgate::init_logging(&settings);
    let tollgate = tollgate::Application::build(settings).await?;
    println!("The product on {} — subscribe, then open {}/product", tollgate.public_url, tollgate.public_url);
    let app = example_product::app(&tollgate);
    tollgate.serve(app).await?;
    Ok(())
}
