//! torch's zip layout: `<prefix>/data.pkl` (the pickle) beside one `<prefix>/data/<key>` entry per storage.

use std::{collections::HashMap, fs::File, io::Read, path::Path};

use super::{check_storage, invalid, machine::Machine, materialize, tensor_entries, MAX_STORAGE_BYTES};
use crate::{CheckpointError, Result};

pub(super) fn read(path: &Path) -> Result<Vec<(String, tch::Tensor)>> {
    let file = File::open(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let mut archive = ::zip::ZipArchive::new(file)
        .map_err(|e| invalid(path, format!("not a zip archive as torch.save writes ({e})")))?;
    let pickle_name = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| invalid(path, "the archive has no data.pkl"))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let pickle = read_entry(&mut archive, &pickle_name, path)?;
    let root = Machine::new(path, &pickle, 0).run()?;
    let entries = tensor_entries(path, root)?;
    let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
    for (_, desc) in &entries {
        if bytes.contains_key(&desc.key) {
            continue;
        }
        let entry_name = format!("{prefix}data/{}", desc.key);
        let size = archive
            .by_name(&entry_name)
            .map_err(|e| invalid(path, format!("missing storage {entry_name}: {e}")))?
            .size();
        check_storage(path, desc, size)?;
        bytes.insert(desc.key.clone(), read_entry(&mut archive, &entry_name, path)?);
    }
    let storages = bytes.iter().map(|(key, data)| (key.clone(), data.as_slice())).collect();
    materialize(path, entries, &storages)
}

fn read_entry(archive: &mut ::zip::ZipArchive<File>, name: &str, path: &Path) -> Result<Vec<u8>> {
    let mut entry = archive.by_name(name).map_err(|e| invalid(path, format!("missing {name}: {e}")))?;
    if entry.size() > MAX_STORAGE_BYTES {
        return Err(invalid(path, format!("{name} declares {} bytes", entry.size())));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    Ok(bytes)
}
