//! Tenants and their catalogs: who sells what, how popular each product is, what it costs and
//! how much of it is in stock when the day begins.

use super::random::{Seeded, Skewed};
use super::{FLASH_LINE_PER_MILLE, FLASH_SKUS_PER_TENANT};
use crate::domain::{Currency, OrderLine, Quantity, Sku, TenantId};

/// Currencies the tenants sell in, one each, in turn.
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// One tenant's shop.
#[derive(Clone, Debug)]
pub(crate) struct Shop {
    pub tenant: TenantId,
    pub currency: Currency,
    /// Regular products, most popular first.
    pub skus: Vec<Sku>,
    /// Flash-sale products: little stock, sold out early in the day.
    pub flash: Vec<Sku>,
    /// Unit prices of `skus` then `flash`, in minor units.
    prices: Vec<u64>,
    popularity: Skewed,
    /// Units of each of `skus` then `flash` received before the day begins.
    pub stock: Vec<u64>,
}

/// How the flash-sale products' SKUs begin.
const FLASH_PREFIX: &str = "flash-";

impl Shop {
    /// Whether `sku` is one of the flash-sale products, the only ones stocked to sell out.
    pub(crate) fn is_flash_sale(sku: &Sku) -> bool {
        sku.as_str().starts_with(FLASH_PREFIX)
    }

    /// The shop of tenant `index`, stocked for the `orders` it expects.
    pub(crate) fn new(index: usize, skus: usize, orders: u64, random: &mut Seeded) -> Shop {
        let tenant = TenantId::new(&format!("tenant-{index:02}")).expect("a valid tenant id");
        let currency = Currency::new(CURRENCIES[index % CURRENCIES.len()]).expect("ISO code");
        let regular: Vec<Sku> =
            (0..skus).map(|s| Sku::new(&format!("sku-{s:04}")).expect("a valid SKU")).collect();
        let flash: Vec<Sku> = (0..FLASH_SKUS_PER_TENANT)
            .map(|s| Sku::new(&format!("{FLASH_PREFIX}{s}")).expect("a valid SKU"))
            .collect();
        let prices =
            (0..skus + FLASH_SKUS_PER_TENANT).map(|_| random.between(199, 24_999)).collect();
        let popularity = Skewed::zipf(skus);
        // Regular products get twice the units the day is expected to ask of them, so only
        // the flash-sale products sell out; those get a quarter of their expected demand.
        let lines = u128::from(orders) * u128::from(AVERAGE_LINES_TENTHS) / 10;
        let regular_lines = lines * u128::from(1000 - FLASH_LINE_PER_MILLE) / 1000;
        let scale = 1_000_000_000u64;
        let mut stock: Vec<u64> = (0..skus)
            .map(|s| {
                let expected = regular_lines
                    * u128::from(popularity.share(s, scale))
                    * u128::from(AVERAGE_QUANTITY_TENTHS)
                    / (u128::from(scale) * 10);
                u64::try_from(2 * expected + 20).expect("stock of one SKU fits in a u64")
            })
            .collect();
        let flash_lines =
            lines * u128::from(FLASH_LINE_PER_MILLE) / (1000 * FLASH_SKUS_PER_TENANT as u128);
        let flash_stock = u64::try_from(flash_lines / 4).expect("fits").max(1);
        stock.extend(std::iter::repeat_n(flash_stock, FLASH_SKUS_PER_TENANT));
        Shop { tenant, currency, skus: regular, flash, prices, popularity, stock }
    }

    /// Every SKU with its opening stock.
    pub(crate) fn opening_stock(&self) -> impl Iterator<Item = (&Sku, u64)> {
        self.skus.iter().chain(&self.flash).zip(self.stock.iter().copied())
    }

    /// A basket of 1 to 5 distinct products: popular ones more often, now and then a
    /// flash-sale one (one unit: shoppers are limited to one).
    pub(crate) fn basket(&self, random: &mut Seeded) -> Vec<OrderLine> {
        let wanted = usize::try_from(random.between(1, 5)).expect("small").min(self.skus.len());
        let mut lines: Vec<OrderLine> = Vec::with_capacity(wanted);
        while lines.len() < wanted {
            let (index, quantity) = if random.chance(FLASH_LINE_PER_MILLE) {
                let f = usize::try_from(random.below(FLASH_SKUS_PER_TENANT as u64)).expect("small");
                (self.skus.len() + f, 1)
            } else {
                let quantity = match random.below(10) {
                    0..=6 => 1,
                    7 | 8 => 2,
                    _ => 3,
                };
                (self.popularity.pick(random), quantity)
            };
            let sku = self.skus.get(index).unwrap_or_else(|| &self.flash[index - self.skus.len()]);
            if lines.iter().any(|line| line.sku == *sku) {
                continue;
            }
            lines.push(OrderLine {
                sku: sku.clone(),
                quantity: Quantity::new(quantity).expect("1 to 3 units"),
                unit_price: self.prices[index],
            });
        }
        lines
    }
}

/// Lines per basket on average (1 to 5, uniform), in tenths.
const AVERAGE_LINES_TENTHS: u64 = 30;
/// Units per regular line on average (1: 70 %, 2: 20 %, 3: 10 %), in tenths.
const AVERAGE_QUANTITY_TENTHS: u64 = 14;
