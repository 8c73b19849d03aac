//! Which configuration keys each built-in OpenDAL service accepts.
//!
//! OpenDAL deserialises a service's configuration leniently: a key it does not know is
//! ignored, so `-o endpiont=…` would silently fall back to the default endpoint. vault refuses
//! unknown keys instead. The accepted keys are read from each service's own config type (the
//! field names and aliases serde knows for it), so they follow OpenDAL upgrades without a list
//! kept by hand.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// A deserializer that only records the field names a struct asks for.
struct Introspect<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for Introspect<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("introspection only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The field names (aliases included) of a config struct.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// The keys `scheme` accepts, or `None` for a scheme this build does not know (OpenDAL then
/// reports it as unsupported).
pub fn known_keys(scheme: &str) -> Option<Vec<&'static str>> {
    use opendal::services as s;
    let fields = match scheme {
        "s3" => fields_of::<s::S3Config>(),
        "azblob" => fields_of::<s::AzblobConfig>(),
        "gcs" => fields_of::<s::GcsConfig>(),
        "sftp" => fields_of::<s::SftpConfig>(),
        "webdav" => fields_of::<s::WebdavConfig>(),
        "b2" => fields_of::<s::B2Config>(),
        "oss" => fields_of::<s::OssConfig>(),
        "cos" => fields_of::<s::CosConfig>(),
        "obs" => fields_of::<s::ObsConfig>(),
        "swift" => fields_of::<s::SwiftConfig>(),
        "azdls" => fields_of::<s::AzdlsConfig>(),
        "azfile" => fields_of::<s::AzfileConfig>(),
        "dropbox" => fields_of::<s::DropboxConfig>(),
        "onedrive" => fields_of::<s::OnedriveConfig>(),
        "gdrive" => fields_of::<s::GdriveConfig>(),
        "webhdfs" => fields_of::<s::WebhdfsConfig>(),
        "koofr" => fields_of::<s::KoofrConfig>(),
        "upyun" => fields_of::<s::UpyunConfig>(),
        "tos" => fields_of::<s::TosConfig>(),
        "seafile" => fields_of::<s::SeafileConfig>(),
        "pcloud" => fields_of::<s::PcloudConfig>(),
        "yandex_disk" => fields_of::<s::YandexDiskConfig>(),
        "fs" => fields_of::<s::FsConfig>(),
        "memory" => fields_of::<s::MemoryConfig>(),
        _ => return None,
    };
    let mut v = fields.to_vec();
    v.sort_unstable();
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_config_types() {
        let s3 = known_keys("s3").unwrap();
        for k in ["bucket", "endpoint", "region", "root", "access_key_id"] {
            assert!(s3.contains(&k), "{k} missing from {s3:?}");
        }
        assert!(!s3.contains(&"bogus"));
        assert!(
            known_keys("sftp")
                .unwrap()
                .contains(&"known_hosts_strategy")
        );
        assert!(known_keys("nonesuch").is_none());
    }
}
