// Make the replica set `anbang` and its users, once; run again it changes nothing.
// Run by compose.yaml's `init` service (mongosh --nodb) inside mongo1's network namespace.
const fs = require("fs");
const secret = (name) => fs.readFileSync(`/run/secrets/${name}`, "utf8").trim();

const SET = {
  _id: "anbang",
  members: [
    // mongo1 is preferred as primary; any of the three takes over when it is gone.
    { _id: 0, host: "mongo1:27017", priority: 2 },
    { _id: 1, host: "mongo2:27018", priority: 1 },
    { _id: 2, host: "mongo3:27019", priority: 1 },
  ],
};

function connectWithRetry(uri) {
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      return connect(uri);
    } catch (error) {
      sleep(1000);
    }
  }
  throw new Error(`no answer from ${uri} within 60 s`);
}

const admin = connectWithRetry("mongodb://127.0.0.1:27017/admin?directConnection=true");
const rootPassword = secret("mongo_root_password");
// Run again: the administrator exists and signs in. First run: no user exists and this
// connection comes from localhost, which MongoDB lets initiate the set and create the first user.
let authenticated = false;
try {
  authenticated = admin.auth("root", rootPassword).ok === 1;
} catch (error) {
  authenticated = false;
}

// `hello` needs no privileges: it names the set once the set is initiated.
if (admin.adminCommand({ hello: 1 }).setName === undefined) {
  admin.adminCommand({ replSetInitiate: SET });
  print("replica set anbang initiated");
}

for (let waited = 0; !admin.adminCommand({ hello: 1 }).isWritablePrimary; waited++) {
  if (waited > 120) throw new Error("mongo1 did not become primary within 120 s");
  sleep(1000);
}

if (!authenticated) {
  admin.createUser({ user: "root", pwd: rootPassword, roles: ["root"] });
  admin.auth("root", rootPassword);
  print("user root created");
}

const ensureUser = (user, pwd, roles) => {
  if (admin.getUser(user) === null) {
    admin.createUser({ user, pwd, roles });
    print(`user ${user} created`);
  }
};
ensureUser("anbang", secret("mongo_anbang_password"), [{ role: "readWrite", db: "anbang" }]);
// mongodump --oplog reads every database and local.oplog.rs: the `backup` role, nothing more.
ensureUser("anbang_backup", secret("mongo_backup_password"), [{ role: "backup", db: "admin" }]);
print("replica set anbang ready");
