//! Multipart uploads (WIRE.md §2.4 `files`, §2.5 `file`) and image inspection.
//!
//! Files stream into the [`BlobStore`] while they arrive (memory stays bounded by
//! [`HEAD_BYTES_MAX`](crate::blobs::HEAD_BYTES_MAX) per file); the image type is sniffed from
//! the bytes with `imagesize` and the dimensions are read from the image header.

use futures_util::StreamExt;
use http_body_util::BodyExt;

use crate::blobs::{BlobStore, BlobWriter};

/// Text fields of a form, in bytes each.
pub const TEXT_FIELD_BYTES_MAX: usize = 1024 * 1024;

/// What one form may hold.
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    pub body_bytes_max: u64,
    pub file_bytes_max: u64,
    pub files_max: usize,
    /// The field name that carries files (`files` or `file`).
    pub file_field: &'static str,
}

#[derive(Debug)]
pub struct UploadedFile {
    pub file_name: Option<String>,
    pub declared_type: Option<String>,
    /// The bytes, on disk but not yet committed: validate, then commit or drop.
    pub writer: BlobWriter,
}

#[derive(Debug, Default)]
pub struct Form {
    pub texts: Vec<(String, String)>,
    pub files: Vec<UploadedFile>,
}

impl Form {
    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a form was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    #[error("a file exceeds {0} bytes")]
    FileTooLarge(u64),
    #[error("more than {0} files")]
    TooManyFiles(usize),
    #[error("the request body arrived too slowly")]
    TooSlow,
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    #[error("storing the upload failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: Option<&str>) -> Option<String> {
    multer::parse_boundary(content_type?).ok()
}

/// Reads a whole form, storing each file as a blob.
pub async fn read_form(
    body: crate::body::RequestBody,
    boundary: String,
    limits: FormLimits,
    blobs: &BlobStore,
) -> Result<Form, UploadError> {
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limits.body_bytes_max));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form = Form::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return Err(map_multer(err, limits)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == limits.file_field {
            if form.files.len() >= limits.files_max {
                return Err(UploadError::TooManyFiles(limits.files_max));
            }
            let file_name = field.file_name().map(str::to_owned);
            let declared_type = field.content_type().map(ToString::to_string);
            let mut writer = blobs.begin().await?;
            let mut field = field;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if writer.len() + chunk.len() as u64 > limits.file_bytes_max {
                            return Err(UploadError::FileTooLarge(limits.file_bytes_max));
                        }
                        writer.write(&chunk).await?;
                    }
                    Ok(None) => break,
                    Err(err) => return Err(map_multer(err, limits)),
                }
            }
            form.files.push(UploadedFile {
                file_name,
                declared_type,
                writer,
            });
        } else {
            let mut value: Vec<u8> = Vec::new();
            let mut field = field;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if value.len() + chunk.len() > TEXT_FIELD_BYTES_MAX {
                            return Err(UploadError::BodyTooLarge(TEXT_FIELD_BYTES_MAX as u64));
                        }
                        value.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(err) => return Err(map_multer(err, limits)),
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| UploadError::Malformed(format!("field {name:?} is not UTF-8")))?;
            if form.texts.len() >= 16 {
                return Err(UploadError::Malformed("too many fields".into()));
            }
            form.texts.push((name, value));
        }
    }
    Ok(form)
}

fn map_multer(err: multer::Error, limits: FormLimits) -> UploadError {
    match err {
        multer::Error::StreamSizeExceeded { .. } => UploadError::BodyTooLarge(limits.body_bytes_max),
        multer::Error::FieldSizeExceeded { .. } => UploadError::FileTooLarge(limits.file_bytes_max),
        multer::Error::StreamReadFailed(inner) if crate::guard::BodyError::is_too_slow(&*inner) => {
            UploadError::TooSlow
        }
        multer::Error::StreamReadFailed(inner) => UploadError::Malformed(inner.to_string()),
        other => UploadError::Malformed(other.to_string()),
    }
}

/// An image as its header describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

/// What the bytes say about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A recognised image with a readable header.
    Image(ImageInfo),
    /// A recognised format this server does not take (BMP, TIFF, HEIF, ...).
    OtherFormat,
    /// Not a recognisable image, or a header that does not decode.
    Unreadable,
}

/// Sniffs the image type from the bytes and reads its dimensions from the header.
pub fn sniff(head: &[u8]) -> Sniffed {
    let mime = match imagesize::image_type(head) {
        Ok(imagesize::ImageType::Png) => "image/png",
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Gif) => "image/gif",
        Ok(imagesize::ImageType::Webp) => "image/webp",
        Ok(_) => return Sniffed::OtherFormat,
        Err(_) => return Sniffed::Unreadable,
    };
    match imagesize::blob_size(head) {
        Ok(size) if size.width > 0 && size.height > 0 => Sniffed::Image(ImageInfo {
            mime,
            width: u32::try_from(size.width).unwrap_or(u32::MAX),
            height: u32::try_from(size.height).unwrap_or(u32::MAX),
        }),
        _ => Sniffed::Unreadable,
    }
}

/// A declared content type without parameters, lower-cased; `None` when absent or generic.
pub fn declared_mime(declared: Option<&str>) -> Option<String> {
    let mime = declared?.split(';').next()?.trim().to_ascii_lowercase();
    (!mime.is_empty() && mime != "application/octet-stream").then_some(mime)
}

/// The stored name of an upload: its base name without control characters, at most 255
/// characters, or `image.<ext>` when there is none.
pub fn file_name(uploaded: Option<&str>, mime: &str) -> String {
    let base = uploaded
        .map(|name| name.rsplit(['/', '\\']).next().unwrap_or_default())
        .map(|name| {
            name.chars()
                .filter(|c| !c.is_control())
                .take(255)
                .collect::<String>()
        })
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name != "." && name != "..");
    base.unwrap_or_else(|| {
        let ext = match mime {
            "image/jpeg" => "jpg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => "png",
        };
        format!("image.{ext}")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 3x2 PNG (signature and IHDR are all `imagesize` needs).
    pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = vec![
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
        ];
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn sniffing_reads_type_and_dimensions_from_the_bytes() {
        assert_eq!(
            sniff(&png(3, 2)),
            Sniffed::Image(ImageInfo {
                mime: "image/png",
                width: 3,
                height: 2
            })
        );
        assert_eq!(sniff(b"<html>not an image</html>"), Sniffed::Unreadable);
        assert_eq!(sniff(&png(0, 2)), Sniffed::Unreadable);
        assert_eq!(
            sniff(b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\x01\0\0\0\x01\0\0\0\x01\0\x18\0"),
            Sniffed::OtherFormat
        );
    }

    /// A VP8L (lossless) WebP header.
    pub(crate) fn webp(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | ((height - 1) << 14);
        let mut bytes = b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f".to_vec();
        bytes.extend_from_slice(&bits.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes
    }

    #[test]
    fn webp_avatars_are_recognised() {
        assert_eq!(
            sniff(&webp(640, 480)),
            Sniffed::Image(ImageInfo {
                mime: "image/webp",
                width: 640,
                height: 480
            })
        );
    }

    #[test]
    fn declared_types_drop_parameters_and_generic_values() {
        assert_eq!(
            declared_mime(Some("Image/PNG; charset=x")).as_deref(),
            Some("image/png")
        );
        assert_eq!(declared_mime(Some("application/octet-stream")), None);
        assert_eq!(declared_mime(None), None);
    }

    #[test]
    fn file_names_are_base_names_or_a_default() {
        assert_eq!(file_name(Some("../../etc/passwd"), "image/png"), "passwd");
        assert_eq!(file_name(Some("C:\\pics\\cat.gif"), "image/gif"), "cat.gif");
        assert_eq!(file_name(Some(""), "image/jpeg"), "image.jpg");
        assert_eq!(file_name(None, "image/gif"), "image.gif");
    }
}
