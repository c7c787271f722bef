#include "etsmgr/manager/internal/directory.h"

#include <typeindex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"

namespace etsmgr::manager_internal {

// --- ClientNames.

void ClientNames::Insert(const std::string& name) {
  if (many_ != nullptr) {
    many_->insert(name);
    return;
  }
  if (std::find(few_.begin(), few_.end(), name) != few_.end()) return;
  if (few_.size() < kInline) {
    few_.push_back(name);
    return;
  }
  many_ = std::make_unique<absl::flat_hash_set<std::string>>(few_.begin(), few_.end());
  many_->insert(name);
  few_.clear();
}

void ClientNames::Erase(const std::string& name) {
  if (many_ != nullptr) {
    many_->erase(name);
    return;
  }
  auto it = std::find(few_.begin(), few_.end(), name);
  if (it != few_.end()) few_.erase(it);
}

// --- Decisions.

bool Live(const Pid& pid) {
  return pid.valid() && pid.control()->status() < ProcessControl::Status::kExiting;
}

namespace {

std::string Quoted(const std::string& name) { return absl::StrCat("\"", name, "\""); }

// `op "name": atom: detail`, the atom also as the status's payload.
absl::Status Refusal(absl::Status detail, Atom atom, const char* op, const std::string& name) {
  return Annotate(WithAtom(std::move(detail), atom), op, name);
}

// The caller asks for a live managed table: hand it back, confirm it, or say who has it.
Decision ClaimOrConfirm(const char* what, const std::string& name, const Entry& entry,
                        const TableView& view, const Pid& caller) {
  if (view.owner.valid() && view.owner == caller) return {Action::kConfirm, absl::OkStatus()};
  // Held by the keeper, or about to be (its owner is exiting: taken from it directly).
  if (view.held || view.owner_exiting) {
    // Registered to another live client while the keeper has it (the client gave it to the
    // vault, say): that client may still ask for it, so nobody else may take it.
    if (entry.client.valid() && entry.client != caller && Live(entry.client)) {
      return {Action::kConflict,
              Refusal(absl::AlreadyExistsError(absl::StrCat(entry.table.ToString(),
                                                            " is held for its live client ",
                                                            entry.client.ToString())),
                      Atom::kTableExists, what, name)};
    }
    return {Action::kClaim, absl::OkStatus()};
  }
  return {Action::kConflict,
          Refusal(absl::AlreadyExistsError(absl::StrCat(entry.table.ToString(), " is held by ",
                                                        view.owner.ToString(),
                                                        ", not by the caller ", caller.ToString())),
                  Atom::kTableExists, what, name)};
}

}  // namespace

Decision DecideNewTable(const std::string& name, const std::type_info& key,
                        const std::type_info& value, const Entry* entry, const TableView& view,
                        const Pid& caller) {
  if (entry == nullptr || !view.alive) return {Action::kCreate, absl::OkStatus()};
  const TableCore& core = *entry->table.core();
  if (core.key_type() != std::type_index(key) || core.value_type() != std::type_index(value)) {
    return {Action::kConflict, Annotate(absl::InvalidArgumentError(absl::StrCat(
                                            "the managed table holds ", core.type_names(),
                                            ", not <", TypeName(key), ", ", TypeName(value), ">")),
                                        "new_table", name)};
  }
  return ClaimOrConfirm("new_table", name, *entry, view, caller);
}

Decision DecideAddTable(const std::string& name, const Entry* entry, const TableView& entry_view,
                        const AnyTable& table, const TableView& table_view,
                        const std::string* managed_as, const Pid& caller) {
  if (!table_view.alive) {
    return {Action::kConflict,
            Annotate(absl::NotFoundError(absl::StrCat(table.ToString(), " was deleted")),
                     "add_table", name)};
  }
  if (entry != nullptr && entry_view.alive) {
    if (!(entry->table == table)) {
      return {
          Action::kConflict,
          Refusal(absl::AlreadyExistsError(absl::StrCat(
                      "the name manages ", entry->table.ToString(), ", not ", table.ToString())),
                  Atom::kTableExists, "add_table", name)};
    }
    return ClaimOrConfirm("add_table", name, *entry, entry_view, caller);
  }
  if (table_view.owner != caller) {
    return {
        Action::kConflict,
        Refusal(absl::PermissionDeniedError(absl::StrCat(
                    "caller ", caller.ToString(), " is not the owner ",
                    table_view.owner.valid() ? table_view.owner.ToString() : std::string("(none)"),
                    " of ", table.ToString())),
                Atom::kNotOwner, "add_table", name)};
  }
  if (managed_as != nullptr && *managed_as != name) {
    return {Action::kConflict,
            Refusal(absl::AlreadyExistsError(absl::StrCat(
                        table.ToString(), " is already managed as ", Quoted(*managed_as))),
                    Atom::kTableExists, "add_table", name)};
  }
  return {Action::kCreate, absl::OkStatus()};
}

absl::Status DecideDelTable(const std::string& name, const Entry* entry, const TableView& view,
                            const Pid& caller) {
  if (entry == nullptr) {
    return Refusal(absl::NotFoundError(""), Atom::kNoSuchTableEntry, "del_table", name);
  }
  if (entry->client == caller || !view.alive || view.owner == caller) return absl::OkStatus();
  return Refusal(
      absl::PermissionDeniedError(absl::StrCat(
          "caller ", caller.ToString(), " is neither the registered client ",
          entry->client.valid() ? entry->client.ToString() : std::string("(none)"),
          " nor the owner ", view.owner.valid() ? view.owner.ToString() : std::string("(none)"),
          " of ", entry->table.ToString())),
      Atom::kNotOwner, "del_table", name);
}

// --- Directory.

const Entry* Directory::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

Entry* Directory::Find(const std::string& name) {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

bool Directory::Add(const std::string& name, Entry entry) {
  Pid client = std::move(entry.client);
  Entry& added = entries_.emplace(name, std::move(entry)).first->second;
  Pid none;
  return SetClient(added, client, &none);
}

bool Directory::SetClient(Entry& entry, const Pid& client, Pid* dropped) {
  const std::string& name = *entry.name;
  if (entry.client.valid() && entry.client != client) {
    auto it = clients_.find(entry.client);
    if (it != clients_.end()) {
      it->second.Erase(name);
      if (it->second.empty()) {
        *dropped = entry.client;
        clients_.erase(it);
      }
    }
  }
  entry.client = client;
  if (!client.valid()) return false;
  ClientNames& names = clients_[client];
  bool first = names.empty();
  names.Insert(name);
  return first;
}

Entry Directory::Erase(const std::string& name, Pid* dropped) {
  auto it = entries_.find(name);
  Entry entry = std::move(it->second);
  entries_.erase(it);
  if (entry.client.valid()) {
    auto c = clients_.find(entry.client);
    if (c != clients_.end()) {
      c->second.Erase(name);
      if (c->second.empty()) {
        *dropped = entry.client;
        clients_.erase(c);
      }
    }
  }
  if (!open_snapshots_.empty()) {
    Entry kept{entry.table, entry.client, entry.name};
    Bury(std::move(kept));
  }
  return entry;
}

std::vector<std::string> Directory::MarkClientGone(const Pid& client) {
  std::vector<std::string> names;
  auto it = clients_.find(client);
  if (it == clients_.end()) return names;
  ClientNames gone = std::move(it->second);
  clients_.erase(it);
  gone.ForEach([&](const std::string& name) {
    auto e = entries_.find(name);
    if (e != entries_.end() && e->second.client == client) e->second.client = Pid();
    ++exit_work;
    names.push_back(name);
  });
  return names;
}

std::vector<Pid> Directory::Clients() const {
  std::vector<Pid> all;
  all.reserve(clients_.size());
  for (const auto& [client, names] : clients_) all.push_back(client);
  return all;
}

std::vector<Entry> Directory::TakeAll() {
  std::vector<Entry> all;
  all.reserve(entries_.size());
  for (auto& [name, entry] : entries_) {
    if (!open_snapshots_.empty()) Bury(Entry{entry.table, entry.client, entry.name});
    all.push_back(std::move(entry));
  }
  entries_.clear();
  clients_.clear();
  return all;
}

void Directory::Bury(Entry entry) { graveyard_.emplace_back(next_snapshot_, std::move(entry)); }

std::vector<Entry> Directory::EndSnapshot(uint64_t id) {
  open_snapshots_.erase(id);
  // An entry removed when the next id was t is needed by the open snapshots with ids below t.
  const uint64_t oldest = open_snapshots_.empty() ? next_snapshot_ : *open_snapshots_.begin();
  std::vector<Entry> dead;
  while (!graveyard_.empty() && graveyard_.front().first <= oldest) {
    dead.push_back(std::move(graveyard_.front().second));
    graveyard_.pop_front();
  }
  return dead;
}

}  // namespace etsmgr::manager_internal
