package console

import (
	"net/http"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
)

// question is one of the auditor's standing questions, answered from the ledger's indexes
// (the same calls as `gatehouse audit who-dropped`, `pii-readers` and `agents`).
type question struct {
	Name, Title, Help string
	// Needs names the required parameter ("table" or "class"; "" for none).
	Needs string
}

var questions = map[string]question{
	"who-dropped": {Name: "who-dropped", Title: "Who dropped a table", Needs: "table",
		Help: "Every DROP or TRUNCATE of the table, allowed or refused, with who ran it, from where, and whether it completed."},
	"pii-readers": {Name: "pii-readers", Title: "Who read personal data", Needs: "class",
		Help: "Identities whose statements touched columns of the class (pii: any personal-data class) in the period."},
	"agents": {Name: "agents", Title: "Which AI agents queried a table", Needs: "table",
		Help: "Agent identities whose statements read or wrote the table in the period."},
}

// questionData is a question page's model.
type questionData struct {
	Q      question
	Table  string
	Class  string
	Since  string
	Asked  bool
	Drops  []ledger.DropRecord
	Counts []ledger.IdentityCount
}

// questionPage asks one auditor question. The answers cover everyone, so they are for the
// groups that see everything.
func (c *Console) questionPage(w http.ResponseWriter, v *viewer) {
	q, ok := questions[v.r.PathValue("q")]
	if !ok {
		c.fail(w, v, http.StatusNotFound, "no such question")
		return
	}
	if !v.seesAll {
		c.fail(w, v, http.StatusForbidden, "The auditor questions cover everyone's activity: they need membership of auditors, compliance, security or an approver group.")
		return
	}
	vals := v.r.URL.Query()
	d := questionData{Q: q, Table: vals.Get("table"), Class: vals.Get("class"), Since: vals.Get("since")}
	if d.Since == "" {
		d.Since = "90d"
	}
	if d.Class == "" && q.Needs == "class" {
		d.Class = "pii"
	}
	if vals.Get("ask") == "" {
		c.render(w, http.StatusOK, "question", page{Title: q.Title, Nav: "audit", Viewer: v, Data: d})
		return
	}
	lq, err := auditForm{Since: d.Since, From: vals.Get("from"), To: vals.Get("to")}.query(v)
	if err == nil && q.Needs == "table" && d.Table == "" {
		err = errString("table: name the table (with or without its schema)")
	}
	if err != nil {
		c.render(w, http.StatusBadRequest, "question", page{Title: q.Title, Nav: "audit", Viewer: v, Error: err.Error(), Data: d})
		return
	}
	if !c.record(w, v.r, v, c.event(v.r, v.id, EventSearch, "console question "+q.Name+" "+v.r.URL.RawQuery)) {
		return
	}
	r := lq.Range(time.Now())
	ctx := v.r.Context()
	switch q.Name {
	case "who-dropped":
		d.Drops, err = c.opts.Events.WhoDropped(ctx, d.Table, r)
	case "pii-readers":
		d.Counts, err = c.opts.Events.PIIReaders(ctx, d.Class, r)
	case "agents":
		d.Counts, err = c.opts.Events.AgentsQueried(ctx, d.Table, r)
	}
	if err != nil {
		c.opts.Log.Error("console: question", "q", q.Name, "err", err)
		c.fail(w, v, http.StatusInternalServerError, "The question could not be answered; see the server log.")
		return
	}
	d.Asked = true
	c.render(w, http.StatusOK, "question", page{Title: q.Title, Nav: "audit", Viewer: v, Data: d})
}

// errString is an error whose text is shown to the viewer as it is.
type errString string

func (e errString) Error() string { return string(e) }
