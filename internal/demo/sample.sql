-- A realistic sample shop: customers with the personal data that must never leak, and the
-- orders and payments around them. Deterministic, so demos and tests see the same rows.
CREATE TABLE customers (
    id            bigserial PRIMARY KEY,
    full_name     text NOT NULL,
    email         text NOT NULL UNIQUE,
    phone         text,
    date_of_birth date,
    ssn           text,
    card_number   text,
    street        text,
    city          text,
    api_key       text,
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    order_number bigint NOT NULL UNIQUE,
    customer_id  bigint NOT NULL REFERENCES customers(id),
    status       text NOT NULL,
    amount_cents integer NOT NULL,
    product_code text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders(id),
    card_last4  text NOT NULL,
    iban        text,
    amount_cents integer NOT NULL,
    paid_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customers (full_name, email, phone, date_of_birth, ssn, card_number, street, city, api_key, password_hash)
SELECT f.name || ' ' || l.name,
       lower(f.name) || '.' || lower(l.name) || n || '@example.com',
       '+1-202-555-' || lpad((100 + n)::text, 4, '0'),
       date '1960-01-01' + (n * 97 % 15000),
       lpad((100 + n % 600)::text, 3, '0') || '-' || lpad((10 + n % 89)::text, 2, '0') || '-' || lpad((1000 + n * 7 % 8999)::text, 4, '0'),
       (ARRAY['4242424242424242','4000056655665556','5555555555554444','2223003122003222','378282246310005','6011111111111117'])[1 + n % 6],
       (10 + n) || ' ' || (ARRAY['Main St','Oak Ave','Pine Rd','Maple Dr','Cedar Ln'])[1 + n % 5],
       (ARRAY['Springfield','Riverton','Lakeside','Fairview','Georgetown'])[1 + n % 5],
       'sk_live_' || md5('key' || n) || substr(md5('k2' || n), 1, 8),
       '$2b$12$' || substr(md5('salt' || n) || md5('hash' || n), 1, 53)
FROM generate_series(1, 200) AS n,
     LATERAL (SELECT (ARRAY['Alice','Bob','Carol','David','Erin','Frank','Grace','Heidi','Ivan','Judy'])[1 + n % 10] AS name) f,
     LATERAL (SELECT (ARRAY['Smith','Johnson','Garcia','Miller','Davis','Martinez','Lopez','Wilson'])[1 + n % 8] AS name) l;

INSERT INTO orders (order_number, customer_id, status, amount_cents, product_code)
SELECT 100000000 + n * 7919 % 899999999, 1 + n % 200,
       (ARRAY['placed','paid','shipped','delivered','refunded'])[1 + n % 5],
       500 + n * 37 % 50000,
       'SKU-' || lpad((n % 500)::text, 5, '0')
FROM generate_series(1, 1000) AS n;

INSERT INTO payments (order_id, card_last4, iban, amount_cents)
SELECT o.id, right(c.card_number, 4),
       CASE WHEN o.id % 4 = 0 THEN 'DE89370400440532013000' ELSE NULL END,
       o.amount_cents
FROM orders o JOIN customers c ON c.id = o.customer_id
WHERE o.status <> 'placed';
